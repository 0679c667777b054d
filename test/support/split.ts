/** A split admission's rows (queue/split-line.ts admit); none when another held the item's lock ('busy'). */
export async function rowsOf<T>(p: Promise<T[] | null | 'busy'>): Promise<T[]> {
  const r = await p;
  return r === 'busy' ? [] : r!;
}
