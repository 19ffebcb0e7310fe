// Placeholder: filled in by the trainer issue (10).
#pragma once
