// Thresholds as people read them, for alert annotations written from the _config numbers.
{
  // 93600 -> "26 hours", 3024000 -> "35 days", 1 -> "1 s".
  duration(seconds)::
    local plural(n, unit) = '%d %s%s' % [n, unit, if n == 1 then '' else 's'];
    if seconds >= 3 * 86400 && seconds % 86400 == 0 then plural(seconds / 86400, 'day')
    else if seconds >= 3600 && seconds % 3600 == 0 then plural(seconds / 3600, 'hour')
    else if seconds >= 60 && seconds % 60 == 0 then plural(seconds / 60, 'minute')
    else '%g s' % seconds,

  // A number as PromQL reads it back: 0.9 -> "0.9", 1073741824 -> "1073741824".
  number(n):: if n == std.floor(n) then '%d' % n else '%g' % n,

  // 0.9 -> "90%".
  percent(ratio):: '%g%%' % (std.round(ratio * 1000) / 10),
}
