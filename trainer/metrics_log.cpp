#include "trainer/metrics_log.h"
