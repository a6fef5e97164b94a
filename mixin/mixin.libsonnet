// bsg-exporter's monitoring mixin: prometheusAlerts, prometheusRules and grafanaDashboards,
// configured through _config (config.libsonnet).
(import 'config.libsonnet') +
(import 'rules.libsonnet') +
(import 'alerts.libsonnet') +
(import 'dashboards.libsonnet')
