"""What users see: live progress, the front as a table."""
