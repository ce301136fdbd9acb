// recordOrder: the guide's Order shape (status, finalAmount, user.role, ...) as an order event.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Emitter, orderEvent, recordOrder, type OrderLike } from '../src';
import { FakeProducer } from './helpers';

const ORDER: OrderLike = {
  id: 'ord-1001',
  status: 'CONFIRMED',
  finalAmount: '125000.50',
  user: { id: 77, role: 'business' },
  paymentMethod: 'card',
  items: [{ sku: 'a' }, { sku: 'b' }, { sku: 'c' }],
};

test('the guide\'s Order maps to the order event', () => {
  assert.deepEqual(orderEvent(ORDER), {
    order_id: 'ord-1001', status: 'confirmed', amount: 125000.5, currency: 'KRW', user_id: 77,
    user_role: 'business', payment_method: 'card', item_count: 3,
  });
  assert.deepEqual(orderEvent({ ...ORDER, status: 'canceled', currency: 'usd', items: null, itemCount: 2 }, { eventId: 'e-1' }), {
    order_id: 'ord-1001', status: 'cancelled', amount: 125000.5, currency: 'USD', user_id: 77,
    user_role: 'business', payment_method: 'card', item_count: 2, event_id: 'e-1',
  });
  const bare = orderEvent({ id: 5, status: 'created', finalAmount: 0, userId: 'u-5' }, { currency: 'JPY' });
  assert.deepEqual(bare, {
    order_id: 5, status: 'created', amount: 0, currency: 'JPY', user_id: 'u-5', user_role: 'unknown',
    payment_method: 'unknown', item_count: 0,
  });
});

test('statuses pulse does not count are not sent, unless mapped', () => {
  assert.match(String(orderEvent({ ...ORDER, status: 'shipped' })), /not one pulse counts/);
  assert.equal((orderEvent({ ...ORDER, status: 'paid' }, { statusMap: { paid: 'confirmed' } }) as { status: string }).status, 'confirmed');
  assert.match(String(orderEvent({ ...ORDER, status: 'created' }, { statusMap: { created: null } })), /not one pulse counts/);
  assert.match(String(orderEvent({ ...ORDER, finalAmount: 'n/a' })), /not an amount/);
  assert.match(String(orderEvent({ ...ORDER, finalAmount: -1 })), /not an amount/);
  assert.match(String(orderEvent({ ...ORDER, id: undefined })), /no id/);
});

test('recordOrder emits one event, or counts the order as dropped (invalid); it never throws', async () => {
  const producer = new FakeProducer();
  const emitter = new Emitter({ producer, prefix: 't.', handleSignals: false, logger: null, lingerMs: 0 });
  assert.equal(recordOrder(emitter, ORDER), true);
  assert.equal(recordOrder(emitter, { ...ORDER, status: 'shipped' }), false);
  assert.equal(recordOrder(emitter, null as unknown as OrderLike), false);
  const stats = await emitter.close();
  assert.equal(stats.sentEvents, 1);
  assert.equal(stats.dropped.invalid, 2);
  assert.equal(producer.sent[0]!.topic, 't.events.orders');
});
