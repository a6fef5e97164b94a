// Recording rules: the rates the alerts and the dashboard share (thresholds are in the alerts,
// from the config, as mixins write them: a recorded constant has no labels to join on in a
// global view of several Prometheus servers, and two copies of the mixin would collide).
// Names follow level:metric:operations; the level names what is kept beyond the group labels.
// Replicas of one account (same group labels, other replica labels) count the same messages:
// each replica's series are summed first, then the replicas merged by max, so that an HA pair
// counts once even where its replicas split the same messages differently over extra labels
// (a `country` past its cap on one replica only).
local g(config, extra) = std.join(', ', config.bsgGroupLabels + extra);
local rate(config, metric, filter, range, extra) =
  local sel = std.join(', ', [config.bsgSelector] + (if filter == '' then [] else [filter]));
  'max without (%s) (sum by (%s) (rate(%s{%s}[%s])))' % [
    std.join(', ', config.bsgReplicaLabels),
    g(config, extra + config.bsgReplicaLabels),
    metric,
    sel,
    range,
  ];
local increase(config, metric, filter, range, extra) =
  std.strReplace(rate(config, metric, filter, range, extra), 'rate(', 'increase(');

{
  prometheusRules+:: {
    local c = $._config,
    local failed = 'status=~"failed|undelivered"',
    groups+: [
      {
        name: 'bsg_recording',
        rules: [
          {
            record: 'target_channel_status:bsg_messages:rate5m',
            expr: rate(c, 'bsg_messages_total', '', '5m', ['target', 'channel', 'status']),
          },
          {
            record: 'target_channel:bsg_messages:rate5m',
            expr: rate(c, 'bsg_messages_total', '', '5m', ['target', 'channel']),
          },
          {
            record: 'target_channel:bsg_messages:increase5m',
            expr: increase(c, 'bsg_messages_total', '', '5m', ['target', 'channel']),
          },
          {
            record: 'target_channel:bsg_messages:rate15m',
            expr: rate(c, 'bsg_messages_total', '', '15m', ['target', 'channel']),
          },
          {
            record: 'target_channel:bsg_messages_submitted:increase15m',
            expr: increase(c, 'bsg_messages_submitted_total', '', '15m', ['target', 'channel']),
          },
          {
            record: 'target_channel:bsg_messages_failed:rate5m',
            expr: rate(c, 'bsg_messages_total', failed, '5m', ['target', 'channel']),
          },
          {
            record: 'target_channel:bsg_messages_failed:increase5m',
            expr: increase(c, 'bsg_messages_total', failed, '5m', ['target', 'channel']),
          },
          {
            record: 'target_channel:bsg_messages_failed:ratio_rate5m',
            expr: 'target_channel:bsg_messages_failed:rate5m / (target_channel:bsg_messages:rate5m > 0)',
          },
          {
            record: 'target_channel:bsg_messages_failed:rate5m_avg1d',
            expr: 'avg_over_time(target_channel:bsg_messages_failed:rate5m[1d])',
          },
          {
            record: 'target_channel:bsg_messages_delivered:ratio_rate5m',
            expr: '%s\n  / (target_channel:bsg_messages:rate5m > 0)' % rate(c, 'bsg_messages_total', 'status=~"delivered|read"', '5m', ['target', 'channel']),
          },
          {
            record: 'target_channel:bsg_messages_expired:ratio_rate5m',
            expr: '%s\n  / (target_channel:bsg_messages:rate5m > 0)' % rate(c, 'bsg_messages_total', 'status="expired"', '5m', ['target', 'channel']),
          },
          {
            record: 'target_channel_le:bsg_delivery_latency_seconds_bucket:rate5m',
            expr: rate(c, 'bsg_delivery_latency_seconds_bucket', '', '5m', ['target', 'channel', 'le']),
          },
          {
            // BsgSlowDelivery's window: a route with a delivery every few minutes leaves most
            // 5-minute windows empty, and their NaN quantile would reset the alert's `for`.
            record: 'target_channel_le:bsg_delivery_latency_seconds_bucket:rate30m',
            expr: rate(c, 'bsg_delivery_latency_seconds_bucket', '', '30m', ['target', 'channel', 'le']),
          },
          {
            record: 'target_channel:bsg_delivery_latency_seconds:p95_rate30m',
            expr: 'histogram_quantile(0.95, target_channel_le:bsg_delivery_latency_seconds_bucket:rate30m)',
          },
        ] + [
          {
            record: 'target_channel:bsg_delivery_latency_seconds:p%d_rate5m' % q,
            expr: 'histogram_quantile(0.%d, target_channel_le:bsg_delivery_latency_seconds_bucket:rate5m)' % q,
          }
          for q in [50, 95, 99]
        ] + [
          {
            record: 'target_channel_currency:bsg_message_cost:rate5m',
            expr: rate(c, 'bsg_message_cost_total', '', '5m', ['target', 'channel', 'currency']),
          },
          {
            // A replica that already saw a message final knows best: the youngest age wins.
            record: 'target:bsg_oldest_pending_message_age_seconds:min',
            expr: 'min by (%s) (bsg_oldest_pending_message_age_seconds{%s})' % [g(c, ['target']), c.bsgSelector],
          },
          {
            // The data is as fresh as its freshest replica.
            record: 'target:bsg_last_poll_success_timestamp_seconds:max',
            expr: 'max by (%s) (bsg_last_poll_success_timestamp_seconds{%s})' % [g(c, ['target']), c.bsgSelector],
          },
          {
            // The lowest replica's reading: a replica whose balance reads fail keeps showing its
            // last, higher value, and a late alarm after a top-up is better than a missed one.
            record: 'currency:bsg_account_balance:min',
            expr: 'min by (%s) (bsg_account_balance{%s})' % [g(c, ['currency']), c.bsgSelector],
          },
          {
            // The low-balance threshold of each currency an account reports, from the config:
            // its override, or the default (the dashboard draws it; BsgBalanceLow compares).
            record: 'currency:bsg_balance_low_threshold:effective',
            local overrides = c.bsgBalanceLowByCurrency,
            local each(filter, value) =
              'group by (%s) (currency:bsg_account_balance:min%s) * %g' % [g(c, ['currency']), filter, value],
            local others =
              if overrides == {} then ''
              else '{currency!~"%s"}' % std.join('|', std.objectFields(overrides)),
            expr: std.join('\nor\n', [
              each('{currency="%s"}' % currency, overrides[currency])
              for currency in std.objectFields(overrides)
            ] + [each(others, c.bsgBalanceLow)]),
          },
        ],
      },
    ],
  },
}
