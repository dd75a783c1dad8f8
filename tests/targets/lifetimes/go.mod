module lifetimes

go 1.19
