export * from './errors.js';
export * from './log.js';
export * from './ids.js';
export * from './hashing.js';
export * from './placement.js';
export * from './limits.js';
export * from './volume.js';
export * from './rpc.js';
