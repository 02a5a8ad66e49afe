// A webhook receiver for the tests: answers 500 to the first FAIL_FIRST
// POSTs, then 200, and keeps every request (method, path, headers, raw body,
// the status it answered).  GET /_received returns them as JSON.
//
// Env: FAIL_FIRST (default 0), OK_BODY_KB (the 200 comes with a page of so
// many kB, as a receiver behind a web framework may send; default 0),
// KEEP_ALIVE_MS (how long an idle connection is kept open; default Node's),
// PORT_FILE (the bound port is written there).
import http from 'node:http';
import { writeFileSync, renameSync } from 'node:fs';

const failFirst = Number(process.env.FAIL_FIRST || 0);
const okBody = 'ok'.padEnd(Number(process.env.OK_BODY_KB || 0) * 1024, '.');
const received = [];

const server = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method === 'GET' && req.url === '/_received') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(received));
      return;
    }
    const posts = received.length;
    const status = posts < failFirst ? 500 : 200;
    received.push({
      method: req.method, path: req.url, headers: req.headers,
      body: Buffer.concat(chunks).toString('utf8'), status,
    });
    res.writeHead(status, { 'content-type': 'text/plain' });
    res.end(status === 200 ? okBody : 'try again');
  });
  req.on('error', () => {});
});

if (process.env.KEEP_ALIVE_MS) server.keepAliveTimeout = Number(process.env.KEEP_ALIVE_MS);

server.listen(0, '127.0.0.1', () => {
  const file = process.env.PORT_FILE;
  if (file) {
    writeFileSync(`${file}.tmp`, String(server.address().port));
    renameSync(`${file}.tmp`, file);
  }
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
