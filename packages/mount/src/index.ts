export * from './fuse/abi.js';
export * from './fuse/channel.js';
export * from './fuse/codec.js';
export * from './fuse/filesystem.js';
export * from './fuse/mount.js';
export * from './fuse/options.js';
export * from './fuse/session.js';
export * from './fuse/struct.js';
export { PassthroughFs } from './passthrough/passthrough-fs.js';
