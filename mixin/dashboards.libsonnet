// The dashboard: built by grafana/generate.py into dashboards/ (with the default selector),
// given here the configured selector (in its variables and raw-series queries), uid and title. Its variables (job, account, instance,
// target, channel) filter every query; replicas are merged, never summed.
local board = import 'dashboards/bsg-delivery.json';
local defaults = (import 'config.libsonnet')._config;
local defaultSelector = defaults.bsgSelector;

{
  grafanaDashboards+:: {
    local c = $._config,
    local selected(text) = std.strReplace(text, defaultSelector, c.bsgSelector),
    // A threshold line is vector(<default>) (grafana/generate.py): the configured value instead.
    local thresholded(text) = std.foldl(
      function(expr, name) std.strReplace(expr, 'vector(%g)' % defaults[name], 'vector(%g)' % c[name]),
      ['bsgFailureRatio', 'bsgLatencyP95Seconds', 'bsgStuckMessageAgeSeconds'],
      text
    ),
    local variable(v) =
      if v.type == 'query'
      then v + { query+: { query: selected(v.query.query) }, definition: selected(v.definition) }
      else v,
    local panel(p) =
      if std.objectHas(p, 'targets')
      then p + { targets: [t + { expr: thresholded(selected(t.expr)) } for t in p.targets] }
      else p,  // a row
    'bsg-delivery.json': board {
      uid: c.bsgDashboardUid,
      title: c.bsgDashboardTitle,
      templating+: { list: [variable(v) for v in board.templating.list] },
      panels: [panel(p) for p in board.panels],
    },
  },
}
