"""Label values that mean "leave this out", defined once: one for tokens, one for mask pixels."""

IGNORE_TOKEN = -100  # a token label without loss (prompt, image tokens, padding): cross-entropy's ignore_index
IGNORE_PIXEL = 255  # a mask pixel in neither loss nor metric (ReasonSeg's "ignore" polygons)
