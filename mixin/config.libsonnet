// The mixin's settings: override any of them with `(import 'mixin.libsonnet') + { _config+:: { ... } }`.
{
  _config+:: {
    // Selects the exporter's series (every rule, alert and dashboard variable starts from it).
    selector: 'job="bsg"',
    // Labels every aggregation keeps: one series per account when each scrape target carries
    // an `account` label (the way to monitor several BSG accounts apart).
    groupLabels: ['job', 'account'],
    // Labels that tell replicas of one account apart (an HA pair): merged by max, never summed.
    replicaLabels: ['instance', 'pod'],

    // Thresholds, recorded as rules (group bsg_thresholds) so that one place changes them all.
    failureRatio: 0.10,  // BsgHighFailureRatio: failed+undelivered share of final statuses ...
    failureMinMessages: 20,  // ... with at least this many final messages in 5 minutes.
    failureSpikeFactor: 5,  // BsgFailureSpike: this many times the last day's average ...
    failureSpikeMinMessages: 10,  // ... and at least this many failed+undelivered in 5 minutes.
    latencyP95Seconds: 900,  // BsgSlowDelivery: delivery latency p95.
    stuckMessageAgeSeconds: 21600,  // BsgStuckMessages: age of the oldest pending message.
    reportsStoppedMinSubmitted: 10,  // BsgDeliveryReportsStopped: submitted in 15m, none final.
    staleSeconds: 600,  // BsgDataStale: since the last completed poll of any replica.
    balanceLow: 50,  // BsgBalanceLow: default threshold, in the account's currency ...
    balanceLowByCurrency: { UAH: 2000, KZT: 25000 },  // ... and per currency.

    // How long each alert's condition must hold.
    'for': {
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
    runbookURLBase: 'README.md',

    // The dashboard.
    dashboardUid: 'bsg-delivery',
    dashboardTitle: 'BSG SMS delivery',
  },
}
