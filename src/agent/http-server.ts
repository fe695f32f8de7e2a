/**
 * The agent's HTTP endpoints: GET /metrics, GET /stream, GET /healthz.
 * Anything but GET is 405; unknown paths are 404. Binding to loopback is the
 * caller's default (src/agent/agent.ts), not this file's decision. With a web
 * configuration (web-config.ts) it serves HTTPS and asks for basic auth on
 * /metrics and /stream; /healthz says only whether the agent works, and stays
 * open so that liveness probes need no password.
 */
import http from 'node:http';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { UsageError } from '../errors';
import type { StreamHub } from './stream-hub';
import type { WebConfig } from './web-config';

/** Media type of /stream: length-delimited sockleak.v1.Record messages (proto/sockleak.proto). */
export const STREAM_CONTENT_TYPE = 'application/x-protobuf; proto=sockleak.v1.Record; delimited=true';

export interface Routes {
  metrics(): Promise<{ contentType: string; body: string }>;
  /** null when healthy, else why not. */
  unhealthy(): string | null;
  hub: StreamHub;
}

/** A listening server; close() ends every open /stream response. */
export interface AgentServer {
  address: AddressInfo;
  close(): Promise<void>;
}

function plain(res: http.ServerResponse, status: number, text: string, headers: http.OutgoingHttpHeaders = {}): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', ...headers });
  res.end(`${text}\n`);
}

function handle(routes: Routes, req: http.IncomingMessage, res: http.ServerResponse, streams: Set<http.ServerResponse>, web: WebConfig | undefined): void {
  res.on('error', () => undefined); // a subscriber that went away
  const path = (req.url ?? '/').split('?')[0];
  if (path !== '/metrics' && path !== '/stream' && path !== '/healthz') return plain(res, 404, 'not found: try /metrics, /stream or /healthz');
  if (req.method !== 'GET') return plain(res, 405, 'method not allowed', { Allow: 'GET' });
  if (path === '/healthz') {
    const why = routes.unhealthy();
    return plain(res, why === null ? 200 : 503, why ?? 'ok');
  }
  if (web?.auth) {
    web.auth.check(req.headers.authorization).then(
      (ok) => {
        // A client gone during the check: a /stream subscription now would never see its 'close'.
        if (res.destroyed) return;
        if (ok) serve(routes, path, res, streams);
        else plain(res, 401, 'unauthorized', { 'WWW-Authenticate': 'Basic realm="sockleak", charset="UTF-8"' });
      },
      (err: unknown) => plain(res, 500, `authentication failed: ${err instanceof Error ? err.message : String(err)}`),
    );
    return;
  }
  serve(routes, path, res, streams);
}

function serve(routes: Routes, path: string, res: http.ServerResponse, streams: Set<http.ServerResponse>): void {
  if (path === '/metrics') {
    routes.metrics().then(
      ({ contentType, body }) => {
        res.writeHead(200, { 'Content-Type': contentType });
        res.end(body);
      },
      (err: unknown) => plain(res, 500, `metrics failed: ${err instanceof Error ? err.message : String(err)}`),
    );
    return;
  }
  res.writeHead(200, { 'Content-Type': STREAM_CONTENT_TYPE, 'Cache-Control': 'no-store' });
  res.flushHeaders();
  const unsubscribe = routes.hub.subscribe(res);
  if (!unsubscribe) {
    res.destroy(); // headers are sent: the client sees the stream end at once
    return;
  }
  streams.add(res);
  res.on('close', () => {
    unsubscribe();
    streams.delete(res);
  });
}

/** The HTTPS server of a web configuration with TLS. */
function httpsServer(t: NonNullable<WebConfig['tls']>, listener: http.RequestListener): https.Server {
  const server = https.createServer({
    cert: t.cert,
    key: t.key,
    minVersion: t.minVersion,
    ...(t.ca && { ca: t.ca }),
    requestCert: t.clientAuth !== 'NoClientCert',
    rejectUnauthorized: t.clientAuth === 'RequireAndVerifyClientCert',
  });
  if (t.clientAuth === 'VerifyClientCertIfGiven') {
    // Node either requires a valid certificate or accepts any: "valid if given" is checked here.
    server.on('secureConnection', (socket: TLSSocket) => {
      if (!socket.authorized && Object.keys(socket.getPeerCertificate()).length > 0) socket.destroy();
    });
  }
  server.on('request', listener);
  return server;
}

/** Listens on host:port, over TLS and with basic auth when `web` says so. Throws UsageError when the address is taken or not local. */
export async function startServer(host: string, port: number, routes: Routes, web?: WebConfig): Promise<AgentServer> {
  const streams = new Set<http.ServerResponse>();
  const listener: http.RequestListener = (req, res) => handle(routes, req, res, streams, web);
  const server = web?.tls ? httpsServer(web.tls, listener) : http.createServer(listener);
  // Longer than scrapers keep idle connections (Go's default transport: 90 s idle, but Prometheus scrapes
  // every 15-60 s), so the server does not close a connection at the moment a scrape reuses it.
  server.keepAliveTimeout = 65_000;
  server.headersTimeout = 66_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'address already in use' : err.code === 'EADDRNOTAVAIL' ? 'not an address of this host' : err.code ?? err.message;
      reject(new UsageError(`--listen ${host.includes(':') ? `[${host}]` : host}:${port}: ${why}`));
    });
    server.listen(port, host, () => resolve());
  });
  return {
    address: server.address() as AddressInfo,
    close: () =>
      new Promise<void>((resolve) => {
        for (const res of streams) res.end();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
