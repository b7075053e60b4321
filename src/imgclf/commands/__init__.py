"""Small CLI commands that own no contract concern of their own (they call the module that does)."""
