"""The outcome lab: one seeded clinic population under several cadence policies, compared."""
