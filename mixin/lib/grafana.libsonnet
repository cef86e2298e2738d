// The few Grafana shapes pgkpi's dashboards use (panel, row, variables, dashboard with its
// layout), as functions of the mixin's _config. Their output is checked against Grafana's own
// dashboard types (@grafana/schema, mixin/schema/) and every query runs against a real
// Prometheus in tests/it/e2e.rs.
//
// Conventions every panel follows (tests/it/stack_files.rs checks them on the rendered JSON):
// - a `datasource` variable and `target` (and where useful `datname`) variables;
// - `$__rate_interval` in every rate()/increase();
// - a unit and a description on every panel;
// - thresholds from _config.kpi, the same numbers the alerts compare with.
function(config) {
  local ds = { type: 'prometheus', uid: '${datasource}' },

  // Label matchers of a panel query: the mixin's selector and the chosen targets (and databases).
  T: '%s, target=~"$target"' % config.pgkpiSelector,
  TD: self.T + ', datname=~"$datname"',
  RI: '$__rate_interval',
  kpi: config.kpi,

  // One panel. exprs: [expr, legend] pairs or plain expressions (with `legend`).
  panel(title, exprs, unit, description, kind='timeseries', threshold=null, legend=null,
        width=12, height=8, minZero=true, stack=false)::
    local targets = [
      local e = exprs[i];
      local pair = if std.isArray(e) then e else [e, if legend == null then '' else legend];
      {
        refId: std.char(65 + i),
        expr: pair[0],
        legendFormat: pair[1],
        datasource: ds,
      } + (if kind == 'table' then { instant: true, format: 'table' } else {})
      for i in std.range(0, std.length(exprs) - 1)
    ];
    local steps = [{ color: 'green', value: null }]
                  + (if threshold != null then [{ color: 'red', value: threshold }] else []);
    {
      type: kind,
      title: title,
      description: description,
      datasource: ds,
      fieldConfig: {
        defaults: {
          unit: unit,
          thresholds: { mode: 'absolute', steps: steps },
        } + (if kind == 'timeseries' then {
               custom: {
                 thresholdsStyle: { mode: if threshold != null then 'line' else 'off' },
                 stacking: { mode: if stack then 'normal' else 'none' },
               },
             } + (if minZero then { min: 0 } else {}) else {}),
        overrides: [],
      },
      targets: targets,
      // The layout's size, read by dashboard() and not rendered.
      width:: width,
      height:: height,
    },

  // Shows one query of a panel in seconds on a right-hand axis, for a panel whose two series
  // have different units (Grafana would otherwise draw both in the panel's unit).
  secondsOnRight(panel, refId='B')::
    panel {
      fieldConfig+: {
        overrides+: [{
          matcher: { id: 'byFrameRefID', options: refId },
          properties: [
            { id: 'unit', value: 's' },
            { id: 'custom.axisPlacement', value: 'right' },
          ],
        }],
      },
    },

  row(title):: { type: 'row', title: title, collapsed: false, panels: [] },

  // A query variable over a label, multi-valued with "All" (the regex .*).
  queryVariable(name, label, query, sort=null)::
    {
      name: name,
      label: label,
      type: 'query',
      datasource: ds,
      query: { query: query, refId: name },
      refresh: 2,
      multi: true,
      includeAll: true,
      allValue: '.*',
      hide: 0,
    } + (if sort != null then { sort: sort } else {}),

  variables(datname=true, extra=[])::
    [
      { name: 'datasource', label: 'Data source', type: 'datasource', query: 'prometheus', hide: 0 },
      self.queryVariable('target', 'Target', 'label_values(pg_up{%s}, target)' % config.pgkpiSelector, sort=1),
    ]
    + (if datname then [self.queryVariable(
         'datname', 'Database',
         'label_values(pg_stat_database_xact_commit_total{%s}, datname)' % self.T, sort=1
       )] else [])
    + extra,

  // Lays the panels out left to right on Grafana's 24-column grid, a row panel starting a new
  // line, and numbers them.
  dashboard(uid, title, description, panels, templating)::
    local place(state, p) =
      local id = std.length(state.laid) + 1;
      if p.type == 'row' then
        local y = state.y + (if state.x > 0 then state.rowHeight else 0);
        state { laid+: [p { id: id, gridPos: { h: 1, w: 24, x: 0, y: y } }], x: 0, y: y + 1, rowHeight: 0 }
      else
        local wraps = state.x + p.width > 24;
        local x = if wraps then 0 else state.x;
        local y = if wraps then state.y + state.rowHeight else state.y;
        local rowHeight = if wraps then 0 else state.rowHeight;
        state {
          laid+: [p { id: id, gridPos: { h: p.height, w: p.width, x: x, y: y } }],
          x: x + p.width,
          y: y,
          rowHeight: std.max(rowHeight, p.height),
        };
    {
      uid: uid,
      title: title,
      description: description,
      tags: config.dashboardTags,
      timezone: config.dashboardTimezone,
      schemaVersion: 39,
      version: 1,
      editable: true,
      refresh: config.dashboardRefresh,
      time: { from: config.dashboardTimeFrom, to: 'now' },
      graphTooltip: 1,
      links: [{
        title: 'pgkpi dashboards',
        type: 'dashboards',
        tags: [config.dashboardTags[0]],
        asDropdown: true,
        icon: 'external link',
        includeVars: true,
        keepTime: true,
        targetBlank: false,
        tooltip: '',
      }],
      annotations: { list: [] },
      templating: { list: templating },
      panels: std.foldl(place, panels, { laid: [], x: 0, y: 0, rowHeight: 0 }).laid,
    },
}
