"""Experiments that decide: statistics (`stats`), team-draft interleaving (`interleave`),
attribution of outcomes to impressions (`attribution`) and the report (`report`)."""
