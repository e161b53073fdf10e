#!/usr/bin/env bash
# The shipped alerting rules (launch/prometheus/polis-alerts.yml): promtool
# accepts them, and their unit tests (polis-alerts.test.yml) pass, with at
# least one firing and one silent case for every alert. Without promtool the
# test is skipped (exit 77), or fails under CI=true: launch/install-deps.sh
# installs Debian's prometheus package, which ships it.
set -euo pipefail
dir=${1:?usage: alert_rules_test.sh DIR-WITH-polis-alerts.yml}
rules=$dir/polis-alerts.yml tests=$dir/polis-alerts.test.yml

if ! command -v promtool >/dev/null; then
  case "${CI:-}" in
    "" | 0 | false) echo "SKIPPED: promtool not installed (apt-get install prometheus)"; exit 77 ;;
    *) echo "FAILED: promtool not installed under CI (launch/install-deps.sh installs prometheus)"; exit 1 ;;
  esac
fi

promtool check rules "$rules"
(cd "$dir" && promtool test rules "$(basename "$tests")")

# Every alert is exercised both ways: some eval_time expects it firing, some
# expects it silent.
status=0
for alert in $(sed -nE 's/^ *- alert: *([A-Za-z0-9_]+).*/\1/p' "$rules"); do
  firing=$(awk -v a="$alert" '$1 == "alertname:" && $2 == a { getline; print }' "$tests" | grep -c 'exp_alerts:$' || true)
  silent=$(awk -v a="$alert" '$1 == "alertname:" && $2 == a { getline; print }' "$tests" | grep -c 'exp_alerts: \[\]' || true)
  if ((firing == 0 || silent == 0)); then
    echo "FAILED: $alert: $firing firing and $silent silent case(s) in $tests (need at least one of each)"
    status=1
  fi
done
exit $status
