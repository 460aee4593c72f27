"""Setup and account lifecycle as plain functions over domain values; no Slack imports."""
