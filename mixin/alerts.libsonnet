// Alerts on SMS delivery health and on the exporter. Thresholds come from the config, written
// into each expression; every aggregation keeps the group labels, so each account alerts on its
// own and an HA pair alerts once. `summary` is a plain sentence; `description` the values.
local on(config, extra) = 'on (%s)' % std.join(', ', config.bsgGroupLabels + extra);
// ", job bsg, account a": the group labels an alert carries, as words.
local scope(config) = std.join('', [
  '{{ with $labels.%s }}, %s {{ . }}{{ end }}' % [label, label]
  for label in config.bsgGroupLabels
]);
// 900 -> "15m", 21600 -> "6h": a threshold in seconds as a person reads it.
local duration(seconds) =
  if seconds % 3600 == 0 then '%dh' % (seconds / 3600)
  else if seconds % 60 == 0 then '%dm' % (seconds / 60)
  else '%ds' % seconds;
local alert(config, name, severity, expr, summary, description) = {
  alert: name,
  expr: expr,
  'for': config.bsgAlertFor[name],
  labels: { severity: severity },
  annotations: {
    summary: summary,
    description: description,
    runbook_url: '%s#%s' % [config.bsgRunbookURLBase, std.asciiLower(name)],
  },
};

{
  prometheusAlerts+:: {
    local c = $._config,
    local s = scope(c),
    // "50; UAH 2000, KZT 25000": the balance thresholds as the description says them.
    local thresholds = std.join('; ', ['%g' % c.bsgBalanceLow] + (
      if c.bsgBalanceLowByCurrency == {} then []
      else [std.join(', ', ['%s %g' % [k, c.bsgBalanceLowByCurrency[k]] for k in std.objectFields(c.bsgBalanceLowByCurrency)])]
    )),
    groups+: [
      {
        name: 'bsg_delivery',
        rules: [
          alert(
            c, 'BsgHighFailureRatio', 'critical',
            |||
              target_channel:bsg_messages_failed:ratio_rate5m > %(ratio)g
                and %(on)s
              target_channel:bsg_messages:increase5m >= %(min)g
            ||| % { on: on(c, ['target', 'channel']), ratio: c.bsgFailureRatio, min: c.bsgFailureMinMessages },
            'Many messages reached failed or undelivered.',
            '{{ $value | humanizePercentage }} of the {{ $labels.channel }} messages of target {{ $labels.target }}%s that reached a final status in the last 5 minutes were failed or undelivered (threshold: %g%% of at least %g). Check first the status mix on the dashboard, then the error codes in the BSG account.' % [s, c.bsgFailureRatio * 100, c.bsgFailureMinMessages],
          ),
          alert(
            c, 'BsgFailureSpike', 'warning',
            |||
              target_channel:bsg_messages_failed:rate5m
                > %(on)s
              target_channel:bsg_messages_failed:rate5m_avg1d * %(factor)g
                and %(on)s
              target_channel:bsg_messages_failed:increase5m >= %(min)g
            ||| % { on: on(c, ['target', 'channel']), factor: c.bsgFailureSpikeFactor, min: c.bsgFailureSpikeMinMessages },
            'Failed and undelivered messages are spiking.',
            'Failed and undelivered {{ $labels.channel }} messages of target {{ $labels.target }}%s arrive at {{ printf "%%.2f" $value }}/s, more than %g times their average of the last day. Check first whether the submitted volume jumped as well, then the status mix.' % [s, c.bsgFailureSpikeFactor],
          ),
          alert(
            c, 'BsgSlowDelivery', 'warning',
            |||
              target_channel:bsg_delivery_latency_seconds:p95_rate30m > %g
            ||| % c.bsgLatencyP95Seconds,
            'Delivery reports arrive slowly.',
            '95%% of the {{ $labels.channel }} messages of target {{ $labels.target }}%s delivered in the last 30 minutes took up to {{ $value | humanizeDuration }} from sent to delivered (threshold: %s). Check first the latency heatmap for one slow route, then the provider status.' % [s, duration(c.bsgLatencyP95Seconds)],
          ),
          alert(
            c, 'BsgStuckMessages', 'warning',
            |||
              target:bsg_oldest_pending_message_age_seconds:min > %g
            ||| % c.bsgStuckMessageAgeSeconds,
            'A message has had no final status for hours.',
            'The oldest pending message of target {{ $labels.target }}%s was created {{ $value | humanizeDuration }} ago (threshold: %s). Check first its pending status on the dashboard (scheduled or moderation waits on BSG), then ask BSG support about the route.' % [s, duration(c.bsgStuckMessageAgeSeconds)],
          ),
          alert(
            c, 'BsgDeliveryReportsStopped', 'critical',
            |||
              target_channel:bsg_messages_submitted:increase15m >= %(min)g
                unless %(on)s
              target_channel:bsg_messages:rate15m > 0
            ||| % { on: on(c, ['target', 'channel']), min: c.bsgReportsStoppedMinSubmitted },
            'Messages are sent but no delivery reports arrive.',
            '{{ $value | humanize }} {{ $labels.channel }} messages of target {{ $labels.target }}%s were submitted in the last 15 minutes and none reached a final status. Check first the provider status and the message list in the BSG account, then the exporter poll errors.' % s,
          ),
        ],
      },
      {
        name: 'bsg_exporter',
        rules: [
          alert(
            c, 'BsgExporterDown', 'critical',
            'up{%(sel)s} == 0 or absent(up{%(sel)s})' % { sel: c.bsgSelector },
            'bsg-exporter is down or cannot be scraped.',
            'Prometheus has not scraped {{ with $labels.instance }}{{ . }}{{ else }}any bsg-exporter{{ end }}%s for %s: no other bsg alert can fire for it. Check first that the process runs (its logs, exit status), then the network path and the scrape configuration.' % [s, c.bsgAlertFor.BsgExporterDown],
          ),
          alert(
            c, 'BsgTargetPollFailing', 'warning',
            'bsg_up{%s} == 0' % c.bsgSelector,
            'Polls of the BSG API fail.',
            'The polls of target {{ $labels.target }} by {{ $labels.instance }}%s have failed for %s; its counters stand still. Check first bsg_poll_errors_total by reason (auth: the API key; rate_limited: the budget; server_error, timeout: the provider), then the poll_failed log lines.' % [s, c.bsgAlertFor.BsgTargetPollFailing],
          ),
          alert(
            c, 'BsgDataStale', 'warning',
            |||
              time() - target:bsg_last_poll_success_timestamp_seconds:max > %g
            ||| % c.bsgStaleSeconds,
            'No replica has completed a poll for a while.',
            'Target {{ $labels.target }}%s has not completed a poll on any replica for {{ $value | humanizeDuration }} (threshold: %s). Check first bsg_poll_errors_total and the poll duration, then the exporter logs.' % [s, duration(c.bsgStaleSeconds)],
          ),
          alert(
            c, 'BsgBalanceLow', 'warning',
            |||
              currency:bsg_account_balance:min
                < currency:bsg_balance_low_threshold:effective
            |||,
            'The BSG account balance is low.',
            'The balance is {{ printf "%%.2f" $value }} {{ $labels.currency }}%s, below its low-balance threshold (%s). Check first the cost rate on the dashboard to see how long it lasts, then top up the account.' % [s, thresholds],
          ),
        ],
      },
    ],
  },
}
