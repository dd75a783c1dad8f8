module example.com/leakytests

go 1.19
