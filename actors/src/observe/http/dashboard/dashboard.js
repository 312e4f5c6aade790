// The dashboard script (replaced by the dashboard branch).
