#include "tests/catch.h"
#include "trainer/rewards.h"
