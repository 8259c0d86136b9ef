"""Alerts, SLOs and anomaly detection with notifications (issue #7). See docs/alerts.md."""
