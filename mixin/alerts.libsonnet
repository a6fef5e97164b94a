// Alerts on SMS delivery health and on the exporter. Thresholds come from the config, written
// into each expression; every aggregation keeps the group labels, so each account alerts on its
// own and an HA pair alerts once. `summary` is a plain sentence; `description` the values.
local on(config, extra) = 'on (%s)' % std.join(', ', config.groupLabels + extra);
// ", job bsg, account a": the group labels an alert carries, as words.
local scope(config) = std.join('', [
  '{{ with $labels.%s }}, %s {{ . }}{{ end }}' % [label, label]
  for label in config.groupLabels
]);
// 900 -> "15m", 21600 -> "6h": a threshold in seconds as a person reads it.
local duration(seconds) =
  if seconds % 3600 == 0 then '%dh' % (seconds / 3600)
  else if seconds % 60 == 0 then '%dm' % (seconds / 60)
  else '%ds' % seconds;
local alert(config, name, severity, expr, summary, description) = {
  alert: name,
  expr: expr,
  'for': config['for'][name],
  labels: { severity: severity },
  annotations: {
    summary: summary,
    description: description,
    runbook_url: '%s#%s' % [config.runbookURLBase, std.asciiLower(name)],
  },
};

{
  prometheusAlerts+:: {
    local c = $._config,
    local s = scope(c),
    // "50; UAH 2000, KZT 25000": the balance thresholds as the description says them.
    local thresholds = std.join('; ', ['%g' % c.balanceLow] + (
      if c.balanceLowByCurrency == {} then []
      else [std.join(', ', ['%s %g' % [k, c.balanceLowByCurrency[k]] for k in std.objectFields(c.balanceLowByCurrency)])]
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
            ||| % { on: on(c, ['target', 'channel']), ratio: c.failureRatio, min: c.failureMinMessages },
            'Many messages reached failed or undelivered.',
            '{{ $value | humanizePercentage }} of the {{ $labels.channel }} messages of target {{ $labels.target }}%s that reached a final status in the last 5 minutes were failed or undelivered (threshold: %g%% of at least %g). Check first the status mix on the dashboard, then the error codes in the BSG account.' % [s, c.failureRatio * 100, c.failureMinMessages],
          ),
          alert(
            c, 'BsgFailureSpike', 'warning',
            |||
              target_channel:bsg_messages_failed:rate5m
                > %(on)s
              target_channel:bsg_messages_failed:rate5m_avg1d * %(factor)g
                and %(on)s
              target_channel:bsg_messages_failed:increase5m >= %(min)g
            ||| % { on: on(c, ['target', 'channel']), factor: c.failureSpikeFactor, min: c.failureSpikeMinMessages },
            'Failed and undelivered messages are spiking.',
            'Failed and undelivered {{ $labels.channel }} messages of target {{ $labels.target }}%s arrive at {{ printf "%%.2f" $value }}/s, more than %g times their average of the last day. Check first whether the submitted volume jumped as well, then the status mix.' % [s, c.failureSpikeFactor],
          ),
          alert(
            c, 'BsgSlowDelivery', 'warning',
            |||
              target_channel:bsg_delivery_latency_seconds:p95_rate30m > %g
            ||| % c.latencyP95Seconds,
            'Delivery reports arrive slowly.',
            '95%% of the {{ $labels.channel }} messages of target {{ $labels.target }}%s delivered in the last 30 minutes took up to {{ $value | humanizeDuration }} from sent to delivered (threshold: %s). Check first the latency heatmap for one slow route, then the provider status.' % [s, duration(c.latencyP95Seconds)],
          ),
          alert(
            c, 'BsgStuckMessages', 'warning',
            |||
              target:bsg_oldest_pending_message_age_seconds:min > %g
            ||| % c.stuckMessageAgeSeconds,
            'A message has had no final status for hours.',
            'The oldest pending message of target {{ $labels.target }}%s was created {{ $value | humanizeDuration }} ago (threshold: %s). Check first its pending status on the dashboard (scheduled or moderation waits on BSG), then ask BSG support about the route.' % [s, duration(c.stuckMessageAgeSeconds)],
          ),
          alert(
            c, 'BsgDeliveryReportsStopped', 'critical',
            |||
              target_channel:bsg_messages_submitted:increase15m >= %(min)g
                unless %(on)s
              target_channel:bsg_messages:rate15m > 0
            ||| % { on: on(c, ['target', 'channel']), min: c.reportsStoppedMinSubmitted },
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
            'up{%(sel)s} == 0 or absent(up{%(sel)s})' % { sel: c.selector },
            'bsg-exporter is down or cannot be scraped.',
            'Prometheus has not scraped {{ with $labels.instance }}{{ . }}{{ else }}any bsg-exporter{{ end }}%s for %s: no other bsg alert can fire for it. Check first that the process runs (its logs, exit status), then the network path and the scrape configuration.' % [s, c['for'].BsgExporterDown],
          ),
          alert(
            c, 'BsgTargetPollFailing', 'warning',
            'bsg_up{%s} == 0' % c.selector,
            'Polls of the BSG API fail.',
            'The polls of target {{ $labels.target }} by {{ $labels.instance }}%s have failed for %s; its counters stand still. Check first bsg_poll_errors_total by reason (auth: the API key; rate_limited: the budget; server_error, timeout: the provider), then the poll_failed log lines.' % [s, c['for'].BsgTargetPollFailing],
          ),
          alert(
            c, 'BsgDataStale', 'warning',
            |||
              time() - target:bsg_last_poll_success_timestamp_seconds:max > %g
            ||| % c.staleSeconds,
            'No replica has completed a poll for a while.',
            'Target {{ $labels.target }}%s has not completed a poll on any replica for {{ $value | humanizeDuration }} (threshold: %s). Check first bsg_poll_errors_total and the poll duration, then the exporter logs.' % [s, duration(c.staleSeconds)],
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
