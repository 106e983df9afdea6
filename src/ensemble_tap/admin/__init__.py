"""The admin API: guards and audit, replay jobs and their stores, DLQ inspection."""
