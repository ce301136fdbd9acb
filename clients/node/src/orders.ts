// recordOrder: the guide's MetricsService.recordOrderMetrics(order), as an order event.

import type { DropReason } from './emitter';
import type { OrderEvent } from './events.generated';
import { label } from './express';

/** The monitoring guide's `Order`, as far as the order event needs it (TypeORM entities fit). */
export interface OrderLike {
  id?: string | number | null;
  /** OrderStatus: `created`, `confirmed`, `cancelled`, `refunded` (any case; `canceled` too). */
  status: string;
  /** The amount charged; TypeORM returns decimal columns as strings, which are accepted. */
  finalAmount?: number | string | null;
  currency?: string | null;
  user?: { id?: string | number | null; role?: string | null } | null;
  userId?: string | number | null;
  paymentMethod?: string | null;
  items?: readonly unknown[] | null;
  itemCount?: number | null;
}

export type OrderStatus = OrderEvent['status'];

export interface RecordOrderOptions {
  /** Currency when the order has none (ISO 4217). Default `KRW`. */
  currency?: string;
  /** More status names: e.g. `{ paid: 'confirmed', pending: null }` (null: not reported). */
  statusMap?: Record<string, OrderStatus | null>;
  /** `event_id`, for deduplication of repeated calls (e.g. `${order.id}:${order.status}`). */
  eventId?: string | number;
}

/** Where events go: an Emitter. */
export interface OrderSink {
  emit(type: 'order', event: OrderEvent): boolean;
  discard(reason: DropReason, why: string): false;
}

const STATUSES: Record<string, OrderStatus> = {
  created: 'created',
  confirmed: 'confirmed',
  cancelled: 'cancelled',
  canceled: 'cancelled',
  refunded: 'refunded',
};

function id(value: unknown): string | number | undefined {
  if (typeof value === 'string' && value.length > 0) return value;
  if (typeof value === 'number' && Number.isFinite(value)) return Number.isInteger(value) ? value : String(value);
  return undefined;
}

/** The order event of an order, or why there is none. */
export function orderEvent(order: OrderLike, options: RecordOrderOptions = {}): OrderEvent | string {
  const raw = String(order.status ?? '');
  const mapped = options.statusMap && Object.prototype.hasOwnProperty.call(options.statusMap, raw)
    ? options.statusMap[raw]
    : STATUSES[raw.toLowerCase()];
  if (!mapped) return `order status ${JSON.stringify(raw)} is not one pulse counts (use statusMap)`;
  const orderId = id(order.id);
  if (orderId === undefined) return 'the order has no id';
  const amount = Number(order.finalAmount ?? NaN);
  if (!Number.isFinite(amount) || amount < 0) return `order ${orderId}: finalAmount ${String(order.finalAmount)} is not an amount`;
  const currency = String(order.currency ?? options.currency ?? 'KRW').toUpperCase();
  const itemCount = Array.isArray(order.items)
    ? order.items.length
    : Number.isInteger(order.itemCount) && (order.itemCount as number) >= 0 ? (order.itemCount as number) : 0;
  const event: OrderEvent = {
    order_id: orderId,
    status: mapped,
    amount,
    currency,
    user_id: id(order.user?.id) ?? id(order.userId) ?? 'anonymous',
    user_role: label(String(order.user?.role ?? ''), 'unknown'),
    payment_method: label(String(order.paymentMethod ?? ''), 'unknown'),
    item_count: itemCount,
  };
  if (options.eventId !== undefined) event.event_id = options.eventId;
  return event;
}

/** One order event for an order change (after every status change, as the guide's recordOrderMetrics).
 * Returns false, and counts the order as dropped (`invalid`), when its status is not one pulse counts
 * or it has no id or amount. Never throws. */
export function recordOrder(emitter: OrderSink, order: OrderLike, options: RecordOrderOptions = {}): boolean {
  try {
    const event = orderEvent(order, options);
    if (typeof event === 'string') return emitter.discard('invalid', event);
    return emitter.emit('order', event);
  } catch (err) {
    return emitter.discard('invalid', `cannot read the order (${String(err)})`);
  }
}
