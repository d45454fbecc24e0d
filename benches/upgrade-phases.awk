# Where the time of one upgrade went, for benches/upgrade.sh.
#
#   awk -v side=ours -f benches/upgrade-phases.awk main.log dpkg.log.new
#   awk -v side=peer -v update=S -v full=S -f benches/upgrade-phases.awk dpkg.log.new
#
# Ours: the phases main.log times ("phase NAME: ok in S s"; the bench's wall time minus
# their sum is "other": the process starts, the re-exec, the bench's own wait). Both: the
# dpkg runs of dpkg.log's new lines (one per "startup" line; a run lasts from its startup
# to the last line before the next, to the second), and how many packages they unpacked
# and configured and triggers they ran. Prints NAME=SECONDS pairs on one line.
FILENAME ~ /main\.log$/ && $3 == "phase" && $5 == "ok" && $6 == "in" {
  name = $4; sub(/:$/, "", name)
  phase[name] += $7
  if (!(name in seen)) { seen[name] = 1; order[++n] = name }
}
FILENAME !~ /main\.log$/ {
  # dpkg.log: DATE TIME WHAT ...
  split($1, d, "-"); split($2, t, ":")
  s = mktime(d[1] " " d[2] " " d[3] " " t[1] " " t[2] " " t[3])
  if ($3 == "startup") { runs++; start[runs] = s; kind[runs] = $4 }
  if (runs) last[runs] = s
  if ($3 == "upgrade" || $3 == "install") unpacks++
  if ($3 == "configure") configures++
  if ($3 == "trigproc") trigprocs++
}
END {
  line = ""
  for (i = 1; i <= n; i++) line = line sprintf(" %s=%.1f", order[i], phase[order[i]])
  if (side == "peer") line = line sprintf(" update=%.1f full-upgrade=%.1f", update, full)
  for (r = 1; r <= runs; r++) dpkg += last[r] - start[r]
  line = line sprintf(" dpkg-runs=%d dpkg-s=%d unpacked=%d configured=%d trigproc=%d",
    runs, dpkg, unpacks, configures, trigprocs)
  print substr(line, 2)
}
