// Every dashboard of the mixin, as grafanaDashboards['pgkpi-<name>.json'].
(import 'overview.libsonnet')
+ (import 'queries.libsonnet')
+ (import 'locks.libsonnet')
+ (import 'health.libsonnet')
+ (import 'queues.libsonnet')
+ (import 'relations.libsonnet')
