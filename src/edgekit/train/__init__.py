"""Training stage: data loading, model presets, two-phase transfer learning and the run directory."""
