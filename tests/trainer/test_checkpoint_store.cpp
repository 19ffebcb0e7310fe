#include "tests/catch.h"
#include "trainer/checkpoint_store.h"
