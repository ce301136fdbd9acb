// The end-to-end service (driven by e2e/worker.test.ts): a tiny shop API wired as the
// monitoring guide wires the platform's services, with @o4o/pulse-client in place of prom-client and
// the Winston HTTP transport. It sends to the broker of PULSE_BROKER_URL with the prefix of
// PULSE_TOPIC_PREFIX, prints `listening PORT`, and ends on SIGTERM through the Emitter's own handler.

import express from 'express';
import winston from 'winston';
import { Emitter, pulseMiddleware, PulseTransport, recordOrder, startHeartbeat, type OrderLike } from '../src';

const emitter = new Emitter({
  lingerMs: Number(process.env['E2E_LINGER_MS'] ?? 50),
  closeTimeoutMs: 8_000,
  logger: { warn: (m) => console.log(m), error: (m) => console.log(m) },
});

// The guide's src/config/logger.config.ts, with PulseTransport where the HTTP transport was.
const logger = winston.createLogger({
  level: 'info',
  format: winston.format.combine(
    winston.format.timestamp(),
    winston.format.errors({ stack: true }),
    winston.format.json(),
  ),
  transports: [new PulseTransport(emitter)],
});

// The guide's HealthController checks, as heartbeats.
const everyMs = Number(process.env['E2E_HEARTBEAT_MS'] ?? 500);
startHeartbeat(emitter, 'payment', async () => ({ responseTime: 1 }), { everyMs });
startHeartbeat(emitter, 'redis', async () => { throw new Error('ECONNREFUSED 127.0.0.1:6379'); }, { everyMs });

const app = express();
app.use(pulseMiddleware(emitter, { userId: (req: express.Request) => req.get('x-user-id') }));
app.use(express.json());

app.get('/health', (_req, res) => {
  res.json({ status: 'healthy' });
});
app.get('/api/products', (_req, res) => {
  res.json([]);
});
app.get('/api/products/:id', (req, res) => {
  res.status(req.params['id'] === '0' ? 404 : 200).json({ id: req.params['id'] });
});

const orders = express.Router();
orders.get('/:id', (req, res) => {
  res.json({ id: req.params['id'] });
});
// The guide's MetricsService.recordOrderMetrics(order), after every order change.
orders.post('/:id/status', (req, res) => {
  const body = req.body as { status: string; finalAmount: string; role: string; items: number };
  const order: OrderLike = {
    id: req.params['id'] ?? null,
    status: body.status,
    finalAmount: body.finalAmount,
    user: { id: req.get('x-user-id') ?? null, role: body.role },
    paymentMethod: 'card',
    items: Array.from({ length: body.items }, (_, i) => ({ sku: `sku-${i}` })),
  };
  res.status(recordOrder(emitter, order) ? 202 : 422).end();
});
app.use('/api/orders', orders);

const cart = express.Router();
cart.get('/items', (_req, res) => {
  res.json([]);
});
app.use('/api/users/:userId/cart', cart);

const payments = express.Router();
payments.post('/:id/charge', (req, res) => {
  const error = Object.assign(new Error('gateway timeout'), { code: 'ETIMEDOUT' });
  // The guide's error log line.
  logger.error('Payment processing failed', {
    orderId: req.params['id'], paymentAmount: 12000, paymentMethod: 'card',
    errorCode: 'PAY_TIMEOUT', errorMessage: error.message, stack: error.stack,
  });
  res.status(502).end();
});
app.use('/api/payments', payments);

app.get('/api/boom', () => {
  throw Object.assign(new Error('boom'), { code: 'E_BOOM' });
});

// Malformed input through the client: the worker dead-letters what its validator refuses.
app.post('/debug/bad', (_req, res) => {
  emitter.emit('request', { service: 'shop-api', method: 'GET', route: '/bad', status_code: '200', duration_ms: 1 } as never);
  emitter.emit('order', { order_id: 'o-bad', status: 'created' } as never);
  emitter.emit('purchase' as never, {} as never);
  res.status(204).end();
});
app.get('/debug/stats', (_req, res) => {
  res.json(emitter.stats());
});

app.use((err: Error, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
  logger.error(err);
  res.status(500).end();
});

void emitter.start().then(() => {
  const server = app.listen(0, '127.0.0.1', () => {
    const address = server.address();
    console.log(`listening ${typeof address === 'object' && address ? address.port : 0}`);
  });
});
