/**
 * Reads a ticket's event stream from an app (`app.request`, no port): `views` gathers each `ticket`
 * event's view, `next()` resolves with the next one, or null once the stream ended; `done` settles
 * when it ends.
 */
export function followTicket(app: { request(path: string): Response | Promise<Response> }, ticketId: string) {
  const res = Promise.resolve(app.request(`/v1/tickets/${ticketId}/events`));
  const views: any[] = [];
  let comments = 0;
  let ended = false;
  let wake = () => {};
  const done = (async () => {
    const r = await res;
    const reader = r.body!.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (block.startsWith(':')) comments++;
        const data = block.split('\n').find((l) => l.startsWith('data: '));
        if (block.includes('event: ticket') && data) views.push(JSON.parse(data.slice(6)));
        wake();
      }
    }
    ended = true;
    wake();
  })();
  let read = 0;
  return {
    res,
    done,
    views,
    comments: () => comments,
    async next(timeoutMs = 10_000): Promise<any> {
      const until = Date.now() + timeoutMs;
      while (read >= views.length && !ended && Date.now() < until) await new Promise<void>((r) => ((wake = r), setTimeout(r, 50)));
      return read < views.length ? views[read++] : null;
    },
  };
}
