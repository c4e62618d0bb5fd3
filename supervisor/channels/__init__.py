"""Channel plugins: `tark channel start|stop|send|status`, the daemon's poll loops and webhook listener."""
