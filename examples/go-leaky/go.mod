module go-leaky

go 1.19
