import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { z } from 'zod';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { startDaemon } from '../src/daemon.js';
import { createLogger } from '../src/kernel/logger.js';
import { createHandlerRegistry } from '../src/service/registry.js';
import type { HandlerSpec } from '../src/service/handler.js';

/**
 * A deployment's handlers module is checked at the start, and what is wrong with it is said
 * plainly, naming the module and the spec: a spec without `config` or `rejoin` was taken and every
 * PUT of an item naming it answered 500; two names one API schema name (`my-shop`, `my_shop`) left
 * one of them out of the document; a syntax error read `SyntaxError: Unexpected end of input` with
 * a stack, after the start had waited for the stores (a review).
 */
const ok: HandlerSpec = { name: 'ok', config: z.object({}).strict(), rejoin: () => 'any', external: false, handle: async () => ({ status: 'succeeded' }) };

describe("a deployment's handlers", () => {
  it('are refused at registration when the daemon could not call them', () => {
    const refusal = (spec: unknown) => {
      try {
        createHandlerRegistry().register(spec as HandlerSpec);
        return null;
      } catch (err) {
        return (err as Error).message;
      }
    };
    expect(refusal(ok)).toBeNull();
    expect(refusal(null)).toMatch(/not an object/);
    expect(refusal({ ...ok, config: undefined })).toMatch(/no config schema/);
    expect(refusal({ ...ok, rejoin: undefined })).toMatch(/no rejoin/);
    expect(refusal({ ...ok, handle: undefined })).toMatch(/no handle/);
    expect(refusal({ ...ok, redact: 'yes' })).toMatch(/redact that is not a function/);
    expect(refusal({ ...ok, name: 'seckill' })).toMatch(/already registered/);
    expect(refusal({ ...ok, name: 'Bad Name' })).toMatch(/not valid/);
    const registry = createHandlerRegistry();
    registry.register({ ...ok, name: 'my-shop' });
    expect(() => registry.register({ ...ok, name: 'my_shop' })).toThrow(/too like my-shop \(both would be MyShopConfig/);
  });

  it('stop a start with a module that cannot load, saying which and why, before the stores are waited for', { timeout: 30_000 }, async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'fg-handlers-'));
    try {
      const broken = path.join(dir, 'broken.mjs');
      await writeFile(broken, 'export const handlers = [\n');
      const noConfig = path.join(dir, 'no-config.mjs');
      await writeFile(noConfig, "export const handlers = [{ name: 'fine', config: { safeParse: (v) => ({ success: true, data: v }) }, rejoin: () => 'any', external: false, handle: async () => ({ status: 'succeeded' }) }, { name: 'nocfg', rejoin: () => 'any', external: false, handle: async () => ({ status: 'succeeded' }) }];\n");
      // Stores nobody answers on, waited for a minute: the module's failure must come first.
      const start = (module: string) =>
        startDaemon(
          loadConfig({ PORT: '0', HOST: '127.0.0.1', REDIS_URL: 'redis://127.0.0.1:1', DATABASE_URL: 'postgres://postgres@127.0.0.1:1/none', FLOODGATE_HANDLERS_MODULE: module, FLOODGATE_START_WAIT_MS: '60000', FLOODGATE_PROVISION: 'off' }),
          createLogger('silent'),
        ).then(
          () => 'started',
          (err: Error) => `${err.name}: ${err.message}`,
        );
      const t0 = Date.now();
      expect(await start(broken)).toMatch(new RegExp(`^SetupNeeded: FLOODGATE_HANDLERS_MODULE ${broken.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: cannot be loaded: .+`));
      expect(await start(noConfig)).toMatch(/^SetupNeeded: FLOODGATE_HANDLERS_MODULE .*no-config\.mjs: handlers\[1\]: a handler spec has no config schema/);
      expect(Date.now() - t0).toBeLessThan(20_000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
