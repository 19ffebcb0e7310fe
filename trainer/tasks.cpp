#include "trainer/tasks.h"
