module parkers

go 1.19
