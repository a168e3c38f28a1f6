module github.com/mpaged/mpaged

go 1.26
