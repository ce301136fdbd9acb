// pulseMiddleware on real Express 4 and 5 apps served on 127.0.0.1: one event per finished response,
// the route as a whole template (req.baseUrl + req.route.path, mount parameters included), `unmatched`
// for requests no route matched, and the request's route visible to code it runs (currentRoute).

import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import express5 from 'express';
import express4 from 'express4';
import { currentRoute, pulseMiddleware, templatize } from '../src';
import { Sink, sleep } from './helpers';

type Express = typeof express5;

function app(express: Express, sink: Sink): express5.Express {
  const app = express();
  // No annotation: the request type is Express's, inferred from app.use.
  app.use(pulseMiddleware(sink, { userId: (req) => req.get('x-user') }));
  app.get('/health', (_req, res) => {
    res.send('ok');
  });
  const orders = express.Router();
  orders.get('/:id', (req, res) => {
    res.json({ id: req.params['id'] });
  });
  orders.post('/', (_req, res) => {
    res.status(201).end();
  });
  orders.get('/:id/fail', (_req, _res, next) => next(new Error('payment failed')));
  orders.get('/:id/where', async (_req, res) => {
    await sleep(1);
    res.send(currentRoute());
  });
  app.use('/api/orders', orders);
  const cart = express.Router();
  cart.get('/items/:itemId', (_req, res) => {
    res.send('item');
  });
  app.use('/api/users/:userId/cart', cart);
  const invoices = express.Router({ mergeParams: true });
  invoices.get('/:invoiceId', (_req, res) => {
    res.send('invoice');
  });
  const shops = express.Router();
  shops.use('/:shopId/invoices', invoices);
  app.use('/api/shops', shops);
  app.use('/static', (_req, res) => {
    res.send('a file');
  });
  app.use((_err: unknown, _req: express5.Request, res: express5.Response, _next: express5.NextFunction) => {
    res.status(500).send('error');
  });
  return app;
}

function request(port: number, method: string, path: string, headers: Record<string, string> = {}): Promise<[number, string]> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method, path, headers }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve([res.statusCode ?? 0, body]));
    });
    req.on('error', reject);
    req.end();
  });
}

const CASES: [string, string, number, string][] = [
  ['GET', '/health', 200, '/health'],
  ['GET', '/api/orders/42', 200, '/api/orders/:id'],
  ['POST', '/api/orders', 201, '/api/orders'],
  ['GET', '/api/orders/42/fail', 500, '/api/orders/:id/fail'],
  ['GET', '/api/users/7/cart/items/99', 200, '/api/users/:userId/cart/items/:itemId'],
  ['GET', '/api/users/8/cart/items/8', 200, '/api/users/:userId/cart/items/:itemId'],
  ['GET', '/api/shops/3/invoices/555', 200, '/api/shops/:shopId/invoices/:invoiceId'],
  ['GET', '/static/app.js', 200, 'unmatched'],
  ['GET', '/nope/123', 404, 'unmatched'],
  ['DELETE', '/api/orders/42', 404, 'unmatched'],
  ['M-SEARCH', '/health', 404, 'unmatched'],
];

for (const [name, express] of [['Express 5', express5], ['Express 4', express4 as unknown as Express]] as const) {
  describe(name, () => {
    const sink = new Sink();
    let server: http.Server;
    let port = 0;
    before(async () => {
      server = app(express, sink).listen(0, '127.0.0.1');
      await new Promise((resolve) => server.once('listening', resolve));
      port = (server.address() as AddressInfo).port;
    });
    after(() => new Promise((resolve) => server.close(resolve)));

    test('one event per response, with the whole route template, never a raw path', async () => {
      sink.events.length = 0;
      for (const [method, path, status] of CASES) {
        const [got] = await request(port, method, path, { 'x-user': 'u-1' });
        assert.equal(got, status, `${method} ${path}`);
      }
      await sleep(20);
      const events = sink.of('request');
      assert.equal(events.length, CASES.length);
      const seen = events.map((e) => [e['method'], e['route'], e['status_code']]);
      const want = CASES.map(([method, , status, route]) => [method === 'M-SEARCH' ? 'OTHER' : method, route, status]);
      assert.deepEqual(seen, want);
      for (const event of events) {
        assert.equal(event['service'], 'shop-api');
        assert.equal(event['user_id'], 'u-1');
        assert.equal(typeof event['duration_ms'], 'number');
        assert.ok((event['duration_ms'] as number) >= 0);
        assert.ok(!String(event['route']).match(/\d/), `no id in ${String(event['route'])}`);
      }
    });

    test('code run for a request knows its route template, also after an await', async () => {
      const [status, body] = await request(port, 'GET', '/api/orders/77/where');
      assert.equal(status, 200);
      assert.equal(body, '/api/orders/:id/where');
      assert.equal(currentRoute(), undefined, 'outside a request: none');
    });

    test('no user id when the hook gives none', async () => {
      sink.events.length = 0;
      await request(port, 'GET', '/health');
      await sleep(20);
      assert.equal(sink.of('request')[0]!['user_id'], undefined);
    });
  });
}

test('templatize turns matched parameter values back into :names', () => {
  assert.equal(templatize('/users/42/cart', [['userId', '42']]), '/users/:userId/cart');
  assert.equal(templatize('/users/a%20b', [['name', 'a b']]), '/users/:name');
  assert.equal(templatize('/static/x', []), '/static/x');
});

test('a failing userId hook or emitter never reaches the server', async () => {
  const throwing = {
    service: 's',
    emit(): boolean {
      throw new Error('emitter broke');
    },
  };
  const server = express5()
    .use(pulseMiddleware(throwing, { userId: () => { throw new Error('hook broke'); } }))
    .get('/x', (_req, res) => {
      res.send('fine');
    })
    .listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  try {
    const [status, body] = await request((server.address() as AddressInfo).port, 'GET', '/x');
    assert.deepEqual([status, body], [200, 'fine']);
  } finally {
    await new Promise((resolve) => server.close(resolve));
  }
});
