#include "trainer/checkpoint_store.h"
