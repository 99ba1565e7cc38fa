#!/bin/sh
# A notify_command for migration.toml:
#
#   [cutover]
#   notify_command = ["/usr/local/bin/mongoshift-notify.sh"]
#
# mongoshift runs it with MONGOSHIFT_EVENT (ready, window_expiring, committed, failed) and
# MONGOSHIFT_MIGRATION set; failed events also carry MONGOSHIFT_ERROR. It posts one line to a
# Slack-compatible incoming webhook (SLACK_WEBHOOK_URL) and always to syslog. A failing
# notification is logged by mongoshift and never stops the migration.
set -eu

event="${MONGOSHIFT_EVENT:?not run by mongoshift}"
migration="${MONGOSHIFT_MIGRATION:-migration}"

case "$event" in
  ready)           text="Migration $migration is ready for cutover: approve it with 'mongoshift cutover'." ;;
  window_expiring) text="Migration $migration: the cutover window ends in one hour ('mongoshift extend 24h' keeps it open)." ;;
  committed)       text="Migration $migration is committed: point the applications at the destination." ;;
  failed)          text="Migration $migration failed: ${MONGOSHIFT_ERROR:-see the logs}. Its state is saved; 'mongoshift apply' resumes it." ;;
  *)               text="Migration $migration: $event" ;;
esac

logger -t mongoshift "$text" || true

if [ -n "${SLACK_WEBHOOK_URL:-}" ]; then
  # JSON-escape the text: backslashes and double quotes.
  escaped=$(printf '%s' "$text" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')
  curl --fail --silent --show-error --max-time 20 \
    -H 'Content-Type: application/json' \
    -d "{\"text\": \"$escaped\"}" \
    "$SLACK_WEBHOOK_URL" > /dev/null
fi
