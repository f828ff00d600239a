module vatic.dev/bench/loadgen

go 1.26
