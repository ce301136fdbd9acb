// @o4o/pulse-client: emit O4O platform events to o4o-pulse from Node.js services.

export {
  Emitter,
  DROP_REASONS,
  encodeEnvelope,
  encodeEvent,
  parseBrokers,
  type DropReason,
  type EmitterOptions,
  type EmitterStats,
  type ProducerLike,
  type PulseLogger,
} from './emitter';
export {
  pulseMiddleware,
  templatize,
  type PulseMiddlewareOptions,
  type RequestLike,
  type ResponseLike,
} from './express';
export { orderEvent, recordOrder, type OrderLike, type OrderStatus, type RecordOrderOptions } from './orders';
export { PulseTransport, type LogInfo, type PulseTransportOptions } from './winston';
export { startHeartbeat, type Heartbeat, type HeartbeatOptions } from './heartbeat';
export { currentRoute } from './context';
export * from './events.generated';
