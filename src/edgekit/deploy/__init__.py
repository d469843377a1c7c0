"""Getting a chosen artifact onto a device: `edge pack` bundles it with offline-installable wheels and a smoke test."""
