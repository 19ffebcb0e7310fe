#include "trainer/rewards.h"
