// The locks dashboard (dashboards/pgkpi-locks.json).
local grafana = import '../lib/grafana.libsonnet';
local sharedPanels = import 'shared.libsonnet';

{
  grafanaDashboards+:: {
    'pgkpi-locks.json':
      local g = grafana($._config);
      local shared = sharedPanels(g);
      local T = g.T;
      local TD = g.TD;
      local RI = g.RI;
      local kpi = g.kpi;
      local panels = [g.row('Blocking')]
      + shared.lockPanels
      + [
        g.panel(
          'Root blockers',
          [
            ['pg_blocking_root_info{%s} * on (target, blocker_pid) group_left () pg_blocking_root_xact_age_seconds{%s}' % [T, T], 'pid {{blocker_pid}} {{state}} {{application_name}} {{usename}}'],
          ],
          's',
          'Top root blockers with their state, application and user; the value is the blocker\'s transaction age. pgkpi\'s /debug/locks shows the full tree.',
          kind='table',
          width=24,
        ),
        g.row('Waits'),
        shared.qpsAndLockWaits,
        g.panel(
          'Average active sessions by wait event type',
          [
            ['sum by (target, wait_event_type) (rate(pg_active_sessions_sampled_total{%s}[%s])) / on (target) group_left () clamp_min(sum by (target) (rate(pg_activity_samples_total{%s}[%s])), 1e-9)' % [T, RI, T, RI], '{{wait_event_type}}'],
          ],
          'short',
          'Sampled every second: average number of active sessions, split by what they wait on (CPU = not waiting). The \'performance insights\' view.',
          stack=true,
        ),
        g.panel(
          'Locks by mode',
          [
            ['sum by (target, mode, granted) (pg_locks_count{%s})' % T, '{{mode}} granted={{granted}}'],
          ],
          'short',
          'Heavyweight locks held (granted=true) and awaited (false) by mode.',
        ),
      ]
      + std.filter(function(p) p['title'] == 'Deadlocks', shared.dbPanels);
      g.dashboard(
        'pgkpi-locks',
        'pgkpi / Locks and waits',
        'Who is blocked, by whom, for how long; what active sessions wait on.',
        panels,
        g.variables(),
      ),
  },
}
