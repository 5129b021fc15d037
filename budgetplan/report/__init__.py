"""What people read: tables, plots, exports for device runtimes."""
