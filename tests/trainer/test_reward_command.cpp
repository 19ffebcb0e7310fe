#include "tests/catch.h"
#include "trainer/reward_command.h"
