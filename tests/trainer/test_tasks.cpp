#include "tests/catch.h"
#include "trainer/tasks.h"
