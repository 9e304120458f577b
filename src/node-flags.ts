/**
 * The Node flags Postern's executable runs with. The `#!` line of src/cli.ts and `npm start`
 * carry the same flags, and test/node-flags.test.ts keeps them equal; the benchmark starts its
 * gateway and client with them.
 *
 * `--single-threaded-gc`: by default V8 runs parts of every collection on helper threads, and the
 * main thread waits for them. When the machine's cores are busy (a 2-core gateway relaying a
 * bulk transfer, TLS and all), the helpers wait for a core, and pauses of a few milliseconds
 * grew to 10-20 ms. With the flag, interactive p99 under a bulk transfer went from 12-22 ms to
 * 5-8 ms, and bulk was no slower (docs/performance.md). On a machine with idle cores, Node's
 * default may suit better: start `node dist/src/cli.js` without the flag.
 */
export const POSTERN_NODE_FLAGS: readonly string[] = ['--single-threaded-gc'];
