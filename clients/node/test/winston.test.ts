// PulseTransport with the real winston and the guide's logger setup: error lines become error events,
// other levels do not; the route is the request's template inside a request.

import assert from 'node:assert/strict';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import express from 'express';
import winston from 'winston';
import { pulseMiddleware, PulseTransport } from '../src';
import { Sink, sleep } from './helpers';

/** The guide's logFormat (src/config/logger.config.ts), with the pulse transport added. */
function guideLogger(sink: Sink, transportOptions = {}): winston.Logger {
  const logFormat = winston.format.combine(
    winston.format.timestamp(),
    winston.format.errors({ stack: true }),
    winston.format.json(),
    winston.format.printf(({ timestamp, level, message, ...meta }) =>
      JSON.stringify({ timestamp, level, message, service: 'o4o-platform', environment: process.env['NODE_ENV'], ...meta }),
    ),
  );
  return winston.createLogger({
    level: 'info',
    format: logFormat,
    transports: [new PulseTransport(sink, transportOptions)],
  });
}

test('error lines become error events; info and warn lines do not', async () => {
  const sink = new Sink();
  const logger = guideLogger(sink);
  logger.info('Order processing started', { orderId: 1 });
  logger.warn('slow query');
  const error = Object.assign(new Error('gateway timeout'), { code: 'ETIMEDOUT' });
  logger.error('Payment processing failed', {
    orderId: 1, paymentAmount: 12000, paymentMethod: 'card', errorCode: 'PAY_TIMEOUT',
    errorMessage: error.message, stack: error.stack,
  });
  logger.error(error);
  logger.error('with a numeric code', { code: 503 });
  logger.error('no code at all');
  await sleep(10);
  const events = sink.of('error');
  assert.equal(events.length, 4);
  assert.deepEqual(events.map((e) => [e['service'], e['route'], e['error_code']]), [
    ['shop-api', 'background', 'PAY_TIMEOUT'],
    ['shop-api', 'background', 'ETIMEDOUT'],
    ['shop-api', 'background', 503],
    ['shop-api', 'background', 'error'],
  ]);
  assert.equal(events[0]!['message'], 'Payment processing failed: gateway timeout');
  assert.match(String(events[0]!['stack']), /^Error: gateway timeout\n\s+at /);
  assert.equal(events[1]!['message'], 'gateway timeout');
  assert.match(String(events[1]!['stack']), /^Error: gateway timeout/);
  assert.equal(events[3]!['stack'], undefined);
});

test('service and route: the line\'s own, else the request\'s route, else the options', async () => {
  const sink = new Sink();
  const logger = guideLogger(sink, { service: 'payments', route: 'cron' });
  logger.child({ service: 'billing' }).error('from a child logger');
  logger.error('explicit route', { route: '/api/refunds/:id' });
  logger.error('outside any request');
  const app = express();
  app.use(pulseMiddleware(sink));
  const router = express.Router();
  router.get('/:id/pay', async (_req, res) => {
    await sleep(1);
    logger.error('Payment processing failed', { errorCode: 'DECLINED' });
    res.status(502).end();
  });
  app.use('/api/orders', router);
  app.use((_req, res) => {
    logger.error('no route');
    res.status(404).end();
  });
  const server = app.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  await fetch(`http://127.0.0.1:${port}/api/orders/9/pay`);
  await fetch(`http://127.0.0.1:${port}/missing/9`);
  await new Promise((resolve) => server.close(resolve));
  await sleep(10);
  assert.deepEqual(sink.of('error').map((e) => [e['service'], e['route']]), [
    ['billing', 'cron'],
    ['payments', '/api/refunds/:id'],
    ['payments', 'cron'],
    ['payments', '/api/orders/:id/pay'],
    ['payments', 'unmatched'],
  ]);
});

test('custom levels (syslog): error and more severe lines are sent', async () => {
  const sink = new Sink();
  const logger = winston.createLogger({ levels: winston.config.syslog.levels, level: 'debug', transports: [new PulseTransport(sink)] });
  logger.log('emerg', 'down');
  logger.log('crit', 'disk');
  logger.log('error', 'err');
  logger.log('warning', 'hmm');
  logger.log('notice', 'fyi');
  await sleep(10);
  assert.deepEqual(sink.of('error').map((e) => e['message']), ['down', 'disk', 'err']);
});

test('a throwing emitter never breaks logging', async () => {
  const broken = { service: 's', emit(): boolean { throw new Error('nope'); } };
  const logger = winston.createLogger({ transports: [new PulseTransport(broken)] });
  logger.error('still fine');
  await sleep(5);
});
