// The mixin's settings: override any of them with `(import 'mixin.libsonnet') + { _config+:: { ... } }`.
// Every key starts with `bsg`, so that it merges with other mixins' settings in one _config.
{
  _config+:: {
    // Selects the exporter's series (every rule, alert and dashboard variable starts from it).
    bsgSelector: 'job="bsg"',
    // Labels every aggregation keeps: one series per account when each scrape target carries
    // an `account` label (the way to monitor several BSG accounts apart).
    bsgGroupLabels: ['job', 'account'],
    // Labels that tell replicas of one account apart (an HA pair): merged by max, never summed.
    bsgReplicaLabels: ['instance', 'pod'],

    // Thresholds, written into the alerts (and the dashboard's threshold lines).
    bsgFailureRatio: 0.10,  // BsgHighFailureRatio: failed+undelivered share of final statuses ...
    bsgFailureMinMessages: 20,  // ... with at least this many final messages in 5 minutes.
    bsgFailureSpikeFactor: 5,  // BsgFailureSpike: this many times the last day's average ...
    bsgFailureSpikeMinMessages: 10,  // ... and at least this many failed+undelivered in 5 minutes.
    bsgLatencyP95Seconds: 900,  // BsgSlowDelivery: delivery latency p95.
    bsgStuckMessageAgeSeconds: 21600,  // BsgStuckMessages: age of the oldest pending message.
    bsgReportsStoppedMinSubmitted: 10,  // BsgDeliveryReportsStopped: submitted in 15m, none final.
    bsgStaleSeconds: 600,  // BsgDataStale: since the last completed poll of any replica.
    bsgBalanceLow: 50,  // BsgBalanceLow: default threshold, in the account's currency ...
    bsgBalanceLowByCurrency: { UAH: 2000, KZT: 25000 },  // ... and per currency.

    // How long each alert's condition must hold.
    bsgAlertFor: {
      BsgHighFailureRatio: '5m',
      BsgFailureSpike: '5m',
      BsgSlowDelivery: '15m',
      BsgStuckMessages: '15m',
      BsgDeliveryReportsStopped: '10m',
      BsgExporterDown: '5m',
      BsgTargetPollFailing: '10m',
      BsgDataStale: '2m',
      BsgBalanceLow: '15m',
    },

    // Each alert's runbook is this URL followed by `#` and the alert's name in lower case.
    // Set it to where your copy of the README is served (your Git host): Alertmanager and
    // Grafana show it as a link.
    bsgRunbookURLBase: 'README.md',

    // The dashboard.
    bsgDashboardUid: 'bsg-delivery',
    bsgDashboardTitle: 'BSG SMS delivery',
  },
}
