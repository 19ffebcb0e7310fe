#include "tests/catch.h"
#include "trainer/metrics_log.h"
