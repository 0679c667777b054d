// Worker threads do not inherit tsx's loader: this entry registers it, then loads the TypeScript
// file named in workerData.entry.
import { register } from 'tsx/esm/api';
import { workerData } from 'node:worker_threads';

register();
await import(workerData.entry);
