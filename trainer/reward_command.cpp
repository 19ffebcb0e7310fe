#include "trainer/reward_command.h"
